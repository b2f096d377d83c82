"""Cloud side of fleet management: registry, heartbeat ingest, remote config, bundle
publishing and staged rollouts. The console (cloud.console) is the operator's view of it."""
