#!/usr/bin/env bash
# ab.sh with 1 and 2 writers only, 3,000 commits each, six rounds alternating. Argument: the
# binary's name (/var/tmp/folio-NAME).
ROUNDS="1 2 3 4 5 6" WRITERS="1 2" COUNT=3000 exec "$(dirname "$0")/ab.sh" "$@"
