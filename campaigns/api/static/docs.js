// Starts Swagger UI on /openapi.json. A file, not an inline script: the page's
// Content-Security-Policy (default-src 'self') runs scripts from this origin only.
"use strict";

window.addEventListener("load", function () {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
