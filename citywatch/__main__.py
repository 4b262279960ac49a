from citywatch.cli import main

raise SystemExit(main())
