import sys

from harness.cli import run_main
from harness.transfer.command import main

sys.exit(run_main(main))
