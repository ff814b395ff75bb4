//! The virtual-request part of sails.io.js 0.9 (`socket.request` and `socket.get/post/put/
//! delete`), for the Sails dialect tests (agent command `sails09`).
//
// sails.io.js 0.9 patches socket.io 0.9's `SocketNamespace.prototype`, which socket.io-client
// 4 does not have; these functions take the socket instead. What goes over the wire is the
// same: the event is the verb, the payload the JSON *text* of `{url, data}`, and the ack's
// first argument is `JSON.parse`d. Where 0.9 throws inside the ack callback (unparsable
// answer, or a bare 404 / 403 / 500), this rejects the returned promise instead, so a broken
// server fails the test rather than killing the agent. The promise also carries every ack
// argument (the server sends the status code second), which 0.9 itself ignores.

export function request(socket, url, data, cb, method) {
  // Remove trailing slashes and spaces
  url = url.replace(/\/*\s*$/, "");

  // If method is undefined, use 'get'
  method = method || "get";

  if (typeof url !== "string") {
    return Promise.reject(new Error("Invalid or missing URL!"));
  }

  // Allow data arg to be optional
  if (typeof data === "function") {
    cb = data;
    data = {};
  }

  // Build to request
  const json = JSON.stringify({ url, data });

  return new Promise((resolve, reject) => {
    // Send the message over the socket
    socket.emit(method, json, function afterEmitted(result, ...rest) {
      let parsedResult = result;
      try {
        parsedResult = JSON.parse(result);
      } catch (e) {
        return reject(new Error("Server response could not be parsed!\n" + result));
      }

      // TODO: Handle errors more effectively
      if (parsedResult === 404) return reject(new Error("404: Not found"));
      if (parsedResult === 403) return reject(new Error("403: Forbidden"));
      if (parsedResult === 500) return reject(new Error("500: Server error"));

      cb && cb(parsedResult);
      resolve({ body: parsedResult, raw: result, rest });
    });
  });
}

export const get = (socket, url, data, cb) => request(socket, url, data, cb, "get");
export const post = (socket, url, data, cb) => request(socket, url, data, cb, "post");
export const put = (socket, url, data, cb) => request(socket, url, data, cb, "put");
export const del = (socket, url, data, cb) => request(socket, url, data, cb, "delete");
