from omni_agent.cli import main

raise SystemExit(main())
