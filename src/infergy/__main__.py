from infergy.cli import main

if __name__ == "__main__":  # not in a child spawned by multiprocessing (vLLM's engine core)
    main()
