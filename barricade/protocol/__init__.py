"""The SMTP protocol core, sans-IO: grammar, session state machine, DATA decoder, events."""
