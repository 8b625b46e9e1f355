from services.importer.cli import main

raise SystemExit(main())
