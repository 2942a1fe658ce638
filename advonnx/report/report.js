
(function(){
  function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent.trim();var f=parseFloat(v);
    return (v!==''&&!isNaN(f)&&isFinite(v))?{n:f}:{s:v.toLowerCase(),e:v===''};}
  function cmp(a,b){if(a.e&&!b.e)return 1;if(b.e&&!a.e)return -1;
    if('n' in a&&'n' in b)return a.n-b.n;var x=('s' in a)?a.s:String(a.n),y=('s' in b)?b.s:String(b.n);return x<y?-1:x>y?1:0;}
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('thead th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var desc=th.getAttribute('aria-sort')==='ascending';
        t.querySelectorAll('thead th').forEach(function(o){o.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',desc?'descending':'ascending');
        var tb=t.tBodies[0],rows=Array.prototype.slice.call(tb.rows);
        rows.sort(function(r1,r2){var a=key(r1.cells[i]),b=key(r2.cells[i]);
          if(a.e||b.e)return cmp(a,b);var c=cmp(a,b);return desc?-c:c;});
        rows.forEach(function(r){tb.appendChild(r);});
      });
    });
  });
  document.querySelectorAll('input[data-filter]').forEach(function(inp){
    var t=document.getElementById(inp.getAttribute('data-filter'));
    inp.addEventListener('input',function(){var q=inp.value.toLowerCase().split(/\s+/).filter(Boolean);
      Array.prototype.forEach.call(t.tBodies[0].rows,function(r){var s=r.textContent.toLowerCase();
        r.style.display=q.every(function(w){return s.indexOf(w)>=0;})?'':'none';});});
  });
  document.querySelectorAll('select.ex').forEach(function(sel){
    function show(){var g=sel.getAttribute('data-group');
      document.querySelectorAll('.exset[data-group="'+g+'"]').forEach(function(d){
        d.classList.toggle('on',d.getAttribute('data-key')===sel.value);});}
    sel.addEventListener('change',show);show();
  });
})();
