// Keeps the page current: every 10 s the same page is fetched again and its <main> swapped in,
// unless the reader is typing in a form. Without JavaScript the pages work the same, by reloading.
(function () {
  "use strict";
  function refresh() {
    if (document.hidden) return;
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "SELECT")) return;
    fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) main.replaceWith(fresh);
      })
      .catch(function () {});
  }
  setInterval(refresh, 10000);
})();
