#!/usr/bin/env python3
"""A Soniq command handler: the job arrives as JSON on stdin, the result leaves on stdout.

Exit 0: done (stdout is the result). Exit 75: snooze ({"snooze": seconds} on stdout).
Exit 65: give up (straight to the dead letter). Anything else: a failed attempt (stderr is the error).
"""
import json
import sys

job = json.load(sys.stdin)
to = job["args"].get("to", "")
attempt = job["context"]["attempt"]

if to.endswith("@bounce.example"):
    print(f"{to} bounces: giving up", file=sys.stderr)
    sys.exit(65)
if to.endswith("@busy.example"):
    print(json.dumps({"snooze": 30}))
    sys.exit(75)
if to.endswith("@broken.example"):
    print(f"SMTP 451 for {to} (attempt {attempt})", file=sys.stderr)
    sys.exit(1)

print(f"Sending welcome email to {to}", file=sys.stderr)
print(json.dumps({"sent_to": to, "attempt": attempt, "language": "python"}))
