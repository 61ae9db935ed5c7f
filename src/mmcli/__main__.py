"""`python -m mmcli` runs the command-line interface."""

from mmcli.cli import main

if __name__ == "__main__":
    main()
