"""CRM -> ERP: where CRM change notifications come from (signed webhooks, polling)."""
