// A webhook receiver in Node (tests/integration/test_webhook_deliverer.py): verifies every POST with
// the `standardwebhooks` npm package, prints "verified <webhook-id> <type> <task_id>" (or
// "refused <reason>") per request, and answers 204 (400 when refused).
// Usage: node webhook_receiver.cjs <port> <secret> <node_modules dir>
"use strict";
const http = require("http");
const path = require("path");
const [port, secret, modules] = process.argv.slice(2);
const { Webhook } = require(path.join(modules, "standardwebhooks"));
const wh = new Webhook(secret);

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8"); // the raw body, as it was signed
      try {
        const event = wh.verify(body, req.headers);
        console.log(`verified ${req.headers["webhook-id"]} ${event.type} ${event.data.task_id}`);
        res.writeHead(204).end();
      } catch (err) {
        console.log(`refused ${err.message}`);
        res.writeHead(400).end();
      }
    });
  })
  .listen(Number(port), "127.0.0.1", () => console.log("listening"));
