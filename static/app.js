// Small progressive enhancements; the dashboard works without this file for reading.
(function () {
  "use strict";
  // Keep the CSRF token on every htmx request (also for elements swapped in later).
  document.addEventListener("htmx:configRequest", function (evt) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { evt.detail.headers["X-CSRFToken"] = meta.content; }
  });
  // Show server-side errors of htmx requests instead of failing silently.
  document.addEventListener("htmx:responseError", function (evt) {
    var box = document.getElementById("flash-area");
    if (!box) { return; }
    var xhr = evt.detail.xhr;
    var div = document.createElement("div");
    div.className = "flash flash-error";
    div.setAttribute("role", "alert");
    div.textContent = "The request failed (" + xhr.status + "). " +
      (xhr.status === 403 ? "Your role does not allow this." : "Please try again.");
    box.appendChild(div);
  });
  // Buttons that ask before they act: <button data-confirm="Sure?">.
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest("[data-confirm]");
    if (el && !window.confirm(el.getAttribute("data-confirm"))) {
      evt.preventDefault();
      evt.stopImmediatePropagation();
    }
  }, true);
})();
