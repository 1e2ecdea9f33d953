from htekd.cli import main

raise SystemExit(main())
