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

  // The navigation drawer below 1000 px. Markup in base.html: the Menu link (role=button,
  // aria-controls="sidebar") opens #sidebar; without this script it opens through :target.
  // Every listener is delegated from document, so it keeps working after htmx swaps.
  var narrow = window.matchMedia("(max-width: 999.98px)");

  function drawer() { return document.getElementById("sidebar"); }
  function toggles() { return document.querySelectorAll('.menu-toggle[aria-controls="sidebar"]'); }
  function isOpen() { var bar = drawer(); return !!bar && bar.classList.contains("is-open"); }

  function setMenu(open, focusBack) {
    var bar = drawer();
    if (!bar) { return; }
    open = open && narrow.matches;
    bar.classList.toggle("is-open", open);
    document.documentElement.classList.toggle("menu-open", open);
    toggles().forEach(function (btn) { btn.setAttribute("aria-expanded", open ? "true" : "false"); });
    // While the drawer covers the page, the page behind it takes no focus or clicks.
    var main = document.querySelector(".shell > .main");
    if (main) { main.inert = open; }
    if (open) {
      var target = bar.querySelector('nav a[aria-current="page"]') || bar.querySelector("nav a");
      (target || bar).focus();
    } else if (focusBack) {
      var first = toggles()[0];
      if (first) { first.focus(); }
    }
  }

  document.addEventListener("click", function (evt) {
    if (evt.defaultPrevented) { return; }
    var el = evt.target.closest(".menu-toggle, .menu-close, .menu-backdrop, #sidebar nav a");
    if (!el) { return; }
    if (el.classList.contains("menu-toggle")) {
      evt.preventDefault();
      setMenu(!isOpen(), true);
    } else if (el.matches(".menu-close, .menu-backdrop")) {
      evt.preventDefault();
      setMenu(false, true);
    } else if (isOpen()) {
      setMenu(false, false);  // a nav link: the drawer closes as the page changes
    }
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape" && isOpen()) {
      evt.preventDefault();
      setMenu(false, true);
      return;
    }
    // The menu links act as buttons: Space presses them too (Enter already does).
    if ((evt.key === " " || evt.key === "Spacebar") && evt.target.closest &&
        evt.target.closest('a[role="button"].menu-toggle, a[role="button"].menu-close')) {
      evt.preventDefault();
      evt.target.click();
    }
  });

  // Back to a wide window, or back to this page from the history cache: the drawer is shut.
  var shut = function () { if (isOpen()) { setMenu(false, false); } };
  if (narrow.addEventListener) { narrow.addEventListener("change", shut); }
  window.addEventListener("pageshow", shut);
  // An htmx history restore swaps in a fresh, closed sidebar: align the page state with it.
  document.addEventListener("htmx:historyRestore", function () {
    var open = isOpen();
    document.documentElement.classList.toggle("menu-open", open);
    toggles().forEach(function (btn) { btn.setAttribute("aria-expanded", open ? "true" : "false"); });
    var main = document.querySelector(".shell > .main");
    if (main) { main.inert = open; }
  });

  // Tables wider than their card: mark which edge hides columns (the CSS fades it) and let the
  // keyboard reach the scroller (Tab to it, then the arrow keys scroll).
  function markScroll(wrap) {
    var max = wrap.scrollWidth - wrap.clientWidth;
    if (max <= 1) {
      wrap.removeAttribute("data-overflow");
      if (wrap.getAttribute("data-scroll-focus")) {
        wrap.removeAttribute("tabindex");
        wrap.removeAttribute("data-scroll-focus");
      }
      return;
    }
    var left = wrap.scrollLeft > 1, right = wrap.scrollLeft < max - 1;
    if (left && right) { wrap.setAttribute("data-overflow", "both"); }
    else if (left) { wrap.setAttribute("data-overflow", "left"); }
    else if (right) { wrap.setAttribute("data-overflow", "right"); }
    else { wrap.removeAttribute("data-overflow"); }
    if (!wrap.hasAttribute("tabindex")) {
      wrap.setAttribute("tabindex", "0");
      wrap.setAttribute("data-scroll-focus", "1");
    }
  }
  function markAll() { document.querySelectorAll(".table-wrap").forEach(markScroll); }
  // Scroll events do not bubble; capture them on document (works for swapped-in tables too).
  document.addEventListener("scroll", function (evt) {
    var t = evt.target;
    if (t && t.classList && t.classList.contains("table-wrap")) { markScroll(t); }
  }, true);
  var pending = 0;
  function later() {
    if (pending) { return; }
    pending = window.requestAnimationFrame(function () { pending = 0; markAll(); });
  }
  window.addEventListener("resize", later);
  document.addEventListener("htmx:afterSettle", later);
  document.addEventListener("toggle", later, true);  // a <details> that opens shows its table
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", markAll);
  } else {
    markAll();
  }
})();
