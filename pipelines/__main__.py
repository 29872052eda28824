import sys

from keel.pipelines.cli import main

sys.exit(main())
