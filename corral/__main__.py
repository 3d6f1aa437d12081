from corral.main import main

raise SystemExit(main())
