"""``python -m detdemo`` (and ``torchrun -m detdemo train ...``) run the command line."""

from detdemo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
