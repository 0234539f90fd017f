"""VehicleWorld and State-based Function Calls (arXiv 2509.06736): an executable car cockpit (`world`, `catalog`),
its task set (`tasks`), the FC / SFC / FC+SFC interfaces (`interfaces`, `env`), metrics and evaluation. See
agents/vehicle/README.md."""
