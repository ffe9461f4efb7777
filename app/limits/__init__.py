"""Rate limits in Redis (the ``limits`` library): per IP and per principal, chat and upload budgets.

Attach them to endpoints with ``ChatRateLimit`` / ``UploadRateLimit`` from
``app.api.limits``; the per-IP budget is charged by the authentication middleware.
"""
