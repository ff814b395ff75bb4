//! Backbone.sync over socket.io exactly as the seed "Backbone.js and socket.io" writes it,
//! on the real `backbone` package, for the Backbone dialect tests (agent command `backbone`).
//
// The seed grabs one global socket (`window.NAMESPACE.socket`) and replaces `Backbone.sync`;
// an agent holds many clients, so each gets its own Model and Collection classes whose `sync`
// is the seed's function bound to that client's socket. The body of `sync` follows the seed
// line by line (signature, event name, emit, `socket.once` on `<op>:<endPoint>[:<ctx>]`,
// `model.id = data.id` after a create, `options.success(data)` after a read). One addition:
// it returns a promise of the server's answer `{event, data}`, which Backbone hands back from
// `fetch` / `save` / `destroy`, so a test can wait for it.

import Backbone from "backbone";

/** The seed's Backbone.sync, on `socket`. */
export function makeSync(socket) {
  return function sync(method, model, options) {
    let settle;
    const answered = new Promise((resolve) => {
      settle = resolve;
    });

    /*
     * Create signature object that will emitted to server with every request.
     * This is used on the server to push an event back to the client listener.
     */
    const signature = function () {
      const sig = {};
      sig.endPoint = model.url + (model.id ? "/" + model.id : "");
      if (model.ctx) sig.ctx = model.ctx;
      return sig;
    };

    /*
     * Create an event listener for server push. The server notifies
     * the client upon success of CRUD operation.
     */
    const event = function (operation, sig) {
      let e = operation + ":";
      e += sig.endPoint;
      if (sig.ctx) e += ":" + sig.ctx;
      return e;
    };

    // Save a new model to the server.
    const create = function () {
      const sign = signature(model);
      const e = event("create", sign);
      socket.emit("create", { signature: sign, item: model.attributes });
      socket.once(e, function (data) {
        model.id = data.id;
        settle({ event: e, data });
      });
    };

    // Get a collection or model from the server.
    const read = function () {
      const sign = signature(model);
      const e = event("read", sign);
      socket.emit("read", { signature: sign });
      socket.once(e, function (data) {
        options.success(data); // updates collection, model; fetch
        settle({ event: e, data });
      });
    };

    // Save an existing model to the server.
    const update = function () {
      const sign = signature(model);
      const e = event("update", sign);
      socket.emit("update", { signature: sign, item: model.attributes });
      socket.once(e, function (data) {
        settle({ event: e, data });
      });
    };

    // Delete a model on the server.
    const destroy = function () {
      const sign = signature(model);
      const e = event("delete", sign);
      socket.emit("delete", { signature: sign, item: model.attributes });
      socket.once(e, function (data) {
        settle({ event: e, data });
      });
    };

    // entry point for method
    switch (method) {
      case "create":
        create();
        break;
      case "read":
        read();
        break;
      case "update":
        update();
        break;
      case "delete":
        destroy();
        break;
      default:
        settle({ event: null, data: { error: `unsupported method ${method}` } });
    }
    return answered;
  };
}

/**
 * A Model and a Collection on `url` (a string, as the seed's `model.url` is), with an
 * optional context `ctx` set when they are initialised, as the seed describes.
 */
export function backboneClasses(socket, url, ctx) {
  const sync = makeSync(socket);
  const Model = Backbone.Model.extend({
    url,
    sync,
    initialize() {
      if (ctx) this.ctx = ctx;
    },
  });
  const Collection = Backbone.Collection.extend({
    model: Model,
    url,
    sync,
    initialize() {
      if (ctx) this.ctx = ctx;
    },
  });
  return { Model, Collection };
}
