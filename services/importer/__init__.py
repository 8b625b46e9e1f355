"""cml-import: a client of the HTTP API that imports registrations, events and results from files (README,
"Bulk import (cml-import)"). It never touches Redis: everything goes through the API and its checks."""
