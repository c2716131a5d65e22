"""zoho-job-watcher: follow Zoho CRM asynchronous jobs until they end."""
