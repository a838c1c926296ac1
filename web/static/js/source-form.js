/* Sources: the new-source form shows only the option fields of the chosen kind.
 *
 * No inline script (CSP script-src 'self'). Without JavaScript every kind's fieldset shows,
 * grouped by kind, and the server reads only the chosen kind's fields; here the others are
 * hidden and disabled, so they are not sent either.
 */
(function () {
  "use strict";

  var form = document.querySelector("form[data-source-form]");
  if (!form) { return; }
  var kind = form.querySelector("select[name=kind]");
  var groups = form.querySelectorAll("fieldset[data-kind]");
  if (!kind) { return; }

  function showChosenKind() {
    Array.prototype.forEach.call(groups, function (group) {
      var chosen = group.getAttribute("data-kind") === kind.value;
      group.hidden = !chosen;
      group.disabled = !chosen;
    });
  }

  kind.addEventListener("change", showChosenKind);
  showChosenKind();
}());
