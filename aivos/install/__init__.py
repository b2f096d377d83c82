"""`aivos install edge | cloud` and the air-gapped path (`aivos offline-bundle`).

Modules, one job each: `tree` (idempotent writes under a prefix), `account` (the service
user), `kit` (reading a site kit), `units` (rendering the systemd templates), `layout`
(the installed paths), `edge` and `cloud` (what each node kind gets), `wheelhouse` and
`from_bundle` (the offline runtime), `cli`."""
