"""
The HTTP API.

Service Fabric's Backup Restore REST API (api-version 6.4), plus safehold's own routes.
"""
