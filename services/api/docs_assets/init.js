// Starts Swagger UI on the page GET /docs serves (a file, not an inline script: CSP script-src 'self').
// The spec URL is relative to the page, so the reference works behind a path prefix too.
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: new URL(root.dataset.spec, document.baseURI).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default badge asks validator.swagger.io: no outside calls
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false,
  });
});
