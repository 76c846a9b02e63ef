// Formulas ($...$ and $$...$$, kept as \(...\) and \[...\] by pymdownx.arithmatex) are typeset
// in the browser by MathJax 3, loaded on the first page that has one. Offline, the LaTeX source
// stays readable as it is.
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]],
        processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"}
};
(function () {
  if (!document.querySelector(".arithmatex")) { return; }
  var s = document.createElement("script");
  s.src = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js";
  s.async = true;
  document.head.appendChild(s);
})();
