import sys

from inputiba.cli import main

sys.exit(main())
