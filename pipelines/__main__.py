import sys

from keel.pipelines.cli.main import main

sys.exit(main())
