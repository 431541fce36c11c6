from infergy.cli import main

main()
