import sys

from mooer.cli import main

sys.exit(main())
