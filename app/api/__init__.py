"""HTTP layer: routers, schemas and dependencies only; the work happens in the services."""
