from dittoctl.cli import main

raise SystemExit(main())
