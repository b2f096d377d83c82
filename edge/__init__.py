"""The branch-site agent: local API, intent runtime, knowledge index, store, router, uplink."""
