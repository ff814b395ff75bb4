// The chat page's script (seed "Getting started with Socket.io", public/js/app.js): shows the
// history (`messages-available`) and every new message (`message-added`), newest first, and
// sends the form as `add-message`. Messages are inserted as text, never as HTML, since they come
// from other people.
(function () {
  "use strict";

  var form = document.getElementById("create-message");
  var nameInput = document.getElementById("name");
  var messageInput = document.getElementById("message");
  var list = document.getElementById("messages");
  var status = document.getElementById("status");
  var errorBox = document.getElementById("error");

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  if (typeof io !== "function") {
    status.textContent = "the socket.io client script did not load (/socket.io/socket.io.js)";
    return;
  }

  // No URL: the node that served this page (the seed's io.connect('http://localhost:4000')).
  var socket = io();

  function addMessage(data) {
    var li = document.createElement("li");
    li.className = "list-group-item";
    var heading = document.createElement("h4");
    heading.className = "list-group-item-heading";
    heading.textContent = String(data && data.name);
    var text = document.createElement("p");
    text.className = "list-group-item-text";
    text.textContent = String(data && data.message);
    li.appendChild(heading);
    li.appendChild(text);
    list.insertBefore(li, list.firstChild);
  }

  socket.on("connect", function () {
    status.textContent = "connected";
    status.className = "connected";
  });
  socket.on("disconnect", function (reason) {
    status.textContent = "disconnected (" + reason + "), reconnecting…";
    status.className = "";
  });
  socket.on("connect_error", function (err) {
    status.textContent = "cannot connect: " + (err && err.message);
    status.className = "";
  });

  // The history, oldest first, on every (re)connect: replaces what is shown.
  socket.on("messages-available", function (data) {
    while (list.firstChild) list.removeChild(list.firstChild);
    for (var i = 0; i < (data || []).length; i++) addMessage(data[i]);
  });

  socket.on("message-added", addMessage);

  socket.on("chat-error", function (e) {
    showError((e && e.error) || "error");
  });

  form.addEventListener("submit", function (e) {
    // Don't let the form actually post to the server.
    e.preventDefault();
    var message = { name: nameInput.value, message: messageInput.value };
    // With an ack, so a refused message says why and stays in the box.
    socket.timeout(5000).emit("add-message", message, function (err, res) {
      if (err) return showError("the server did not answer; try again");
      if (res && res.error) return showError(res.error);
      showError("");
      messageInput.value = "";
    });
  });
})();
