"""The web pages' own files: `static/` (ES modules and CSS, served under content-hashed names),
`templates/` (the two pages' HTML) and `words.py` (the plain words the pages use for the policy)."""
