// Small progressive enhancements; the dashboard works without this file for reading.
(function () {
  "use strict";
  // Keep the CSRF token on every htmx request (also for elements swapped in later).
  document.addEventListener("htmx:configRequest", function (evt) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { evt.detail.headers["X-CSRFToken"] = meta.content; }
  });

  function flash(message, category) {
    var box = document.getElementById("flash-area");
    if (!box) { return; }
    var div = document.createElement("div");
    div.className = "flash flash-" + (category || "info");
    div.setAttribute("role", category === "error" ? "alert" : "status");
    div.textContent = message;  // text, never HTML: messages can carry user data
    box.appendChild(div);
    // Keep at most three messages on screen.
    while (box.children.length > 3) { box.removeChild(box.firstElementChild); }
  }

  // Server-side messages for htmx changes arrive as an HX-Trigger "flash" event.
  document.body.addEventListener("flash", function (evt) {
    var d = evt.detail || {};
    if (d.message) { flash(String(d.message), String(d.category || "info")); }
  });

  // Show server-side errors of htmx requests instead of failing silently.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var text = "The request failed (" + xhr.status + "). ";
    if (xhr.status === 403) { text += "Your role does not allow this."; }
    else if (xhr.status === 404) { text += "It no longer exists."; }
    else { text += "Please try again."; }
    flash(text, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    flash("The server could not be reached. Check your connection and try again.", "error");
  });

  // Buttons that ask before they act: <button data-confirm="Sure?">.
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest("[data-confirm]");
    if (el && !window.confirm(el.getAttribute("data-confirm"))) {
      evt.preventDefault();
      evt.stopImmediatePropagation();
    }
  }, true);

  // Copy buttons for one-time secrets: <button data-copy="#input-id">.
  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest("[data-copy]");
    if (!btn) { return; }
    var input = document.querySelector(btn.getAttribute("data-copy"));
    if (!input) { return; }
    input.select();
    var done = function () { btn.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () {});
    } else if (document.execCommand && document.execCommand("copy")) {
      done();
    }
  });
})();
