// Preloaded into the bench's node processes (NODE_OPTIONS=--require): a ".invalid" name (RFC 6761) is answered
// ENOTFOUND at once, as the resolver would, instead of sending the query off this machine.
const dns = require("dns");
const realLookup = dns.lookup;
dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === "function") { callback = options; options = {}; }
  if (typeof hostname === "string" && /\.invalid\.?$/i.test(hostname)) {
    const err = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
    err.code = "ENOTFOUND"; err.errno = -3008; err.syscall = "getaddrinfo"; err.hostname = hostname;
    process.nextTick(() => callback(err));
    return {};
  }
  return realLookup.call(dns, hostname, options, callback);
};
