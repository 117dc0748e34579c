import sys

from gradleak.cli.main import main

sys.exit(main())
