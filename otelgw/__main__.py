from otelgw.cli import main

raise SystemExit(main())
