#!/usr/bin/env node
// A Soniq command handler in JavaScript: job JSON on stdin, result JSON on stdout.
// Exit 0 done, 75 snooze, 65 give up, anything else a failed attempt (stderr is the error).
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const job = JSON.parse(input);
  const to = job.args.to || "";
  if (to.endsWith("@broken.example")) {
    process.stderr.write(`SMTP 451 for ${to}\n`);
    process.exit(1);
  }
  process.stderr.write(`Sending welcome email to ${to}\n`);
  process.stdout.write(JSON.stringify({ sent_to: to, attempt: job.context.attempt, language: "node" }));
});
