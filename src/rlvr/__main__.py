"""`python -m rlvr ...`, the form torchrun starts each rank with."""

from rlvr.cli import main

main()
