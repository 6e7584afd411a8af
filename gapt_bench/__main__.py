from gapt_bench.cli import main

raise SystemExit(main())
