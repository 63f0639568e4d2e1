import sys

from auto_gvpie.orchestrator import main

sys.exit(main())
