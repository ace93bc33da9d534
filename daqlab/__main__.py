from daqlab.cli import main

raise SystemExit(main())
