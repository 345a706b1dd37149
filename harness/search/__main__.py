import sys

from harness.cli import run_main
from harness.search.run import main

sys.exit(run_main(main))
