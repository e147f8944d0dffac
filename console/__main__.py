"""Run the console: ``python -m console`` (or ``clientflow console``)."""

from console.serve import main

if __name__ == "__main__":
    main()
