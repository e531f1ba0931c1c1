from gigafab.cli import main

raise SystemExit(main())
