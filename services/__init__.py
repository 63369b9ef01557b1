"""Every business rule of Creditdesk. Routes and jobs call these; each owns its transaction."""
