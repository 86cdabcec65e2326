from vgi_vision.cli import main

raise SystemExit(main())
