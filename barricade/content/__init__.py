"""Content filtering: what the message says, decoded once for every content check.

Sans-IO: :mod:`.mime` decodes the message as it streams (MIME structure,
transfer encodings, charsets, HTML) into text, links and part records;
:mod:`.uri` finds and normalises URIs and reduces host names to their
registered domain; :mod:`.archive` lists the names inside attachments;
:mod:`.headers` holds the RFC 2822 header checks.  The shipped plugins
(``plugins/uri.py``, ``plugins/rfc2822.py``, ``plugins/attachment.py``,
``plugins/digest.py``) do the DNS and the replies.
"""
