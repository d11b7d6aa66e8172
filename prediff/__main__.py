import sys

from prediff.cli import main

sys.exit(main())
