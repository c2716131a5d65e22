"""zoho-job-watcher: follow Zoho CRM asynchronous jobs until they end."""

__version__ = "0.1.0"
